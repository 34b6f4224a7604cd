"""Generate `serving/tfs_apis.binpb`: TF Serving's API protos as one `FileDescriptorSet`.

The TF Serving client (`serving.tfs_client`) builds its message classes from this file, so a
gateway needs neither `tensorflow-serving-api` nor TensorFlow installed. The descriptors are read
out of the installed `tensorflow-serving-api` / `tensorflow` `_pb2` files (as text, never
importing them: importing any `tensorflow.*` module starts all of TensorFlow), in dependency
order. Run after upgrading either package; a test fails while the checked-in file differs:

    python -m tools.tfs_descriptors          # or: make protos
"""

from __future__ import annotations

import ast
import importlib.util
import re
import sys
from pathlib import Path

from google.protobuf import any_pb2, descriptor_pb2, wrappers_pb2

#: The `_pb2` modules whose messages the client sends or reads (dependencies are followed).
ROOTS = (
    "tensorflow_serving.apis.predict_pb2",
    "tensorflow_serving.apis.get_model_metadata_pb2",
    "tensorflow_serving.apis.get_model_status_pb2",
    "tensorflow_serving.apis.model_management_pb2",
)
OUTPUT = Path(__file__).resolve().parents[1] / "serving" / "tfs_apis.binpb"
_WELL_KNOWN = {"google.protobuf.any_pb2": any_pb2, "google.protobuf.wrappers_pb2": wrappers_pb2}
_IMPORT = re.compile(r"^from ([\w.]+) import (\w+_pb2)", re.M)


def _module_file(module: str) -> Path:
    """The `.py` file of `module`, found without importing its package (no TF start-up)."""
    top, _, rest = module.partition(".")
    spec = importlib.util.find_spec(top)  # top-level find_spec does not run __init__
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{top} is not installed (needed for TF Serving's protos)")
    return Path(next(iter(spec.submodule_search_locations))) / (rest.replace(".", "/") + ".py")


def _serialized_file(source: str, module: str) -> bytes:
    """The bytes a generated `_pb2` module passes to `AddSerializedFile(...)`."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "AddSerializedFile" and node.args:
            return ast.literal_eval(node.args[0])
    raise ImportError(f"{module}: no serialized descriptor found (unexpected protoc output)")


def descriptor_set() -> bytes:
    """The serialized `FileDescriptorSet` of `ROOTS` and their dependencies, dependencies first."""
    files = descriptor_pb2.FileDescriptorSet()
    done: set[str] = set()

    def add(module: str) -> None:
        if module in done:
            return
        done.add(module)
        if module.startswith("google.protobuf."):
            files.file.add().ParseFromString(_WELL_KNOWN[module].DESCRIPTOR.serialized_pb)
            return
        source = _module_file(module).read_text()
        for package, name in _IMPORT.findall(source):
            add(f"{package}.{name}")
        files.file.add().ParseFromString(_serialized_file(source, module))

    for root in ROOTS:
        add(root)
    return files.SerializeToString(deterministic=True)


def main() -> int:
    data = descriptor_set()
    OUTPUT.write_bytes(data)
    print(f"wrote {OUTPUT.name}: {len(data):,} bytes")  # noqa: T201 - a command-line tool
    return 0


if __name__ == "__main__":
    sys.exit(main())
