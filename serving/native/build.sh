#!/usr/bin/env bash
# Builds serving/native/build/towerflow-predict, the C++ front of `towerflow model-server`
# (`make native` runs this). Needs g++, protoc with grpc_cpp_plugin and the gRPC C++ headers
# (Debian/Ubuntu: libgrpc++-dev protobuf-compiler-grpc), and the project's venv for TensorFlow's
# C API headers and TF Serving's API descriptors. TensorFlow itself is opened at run time.
set -euo pipefail
PYTHON=${1:-python}
HERE=$(cd "$(dirname "$0")" && pwd)
BUILD=$HERE/build
GEN=$BUILD/gen
for tool in g++ protoc grpc_cpp_plugin pkg-config; do
  command -v "$tool" >/dev/null || { echo "towerflow-predict: '$tool' not found (Debian: apt-get install g++ pkg-config libgrpc++-dev protobuf-compiler-grpc)" >&2; exit 1; }
done
mkdir -p "$GEN" "$BUILD/obj" "$BUILD/tfinclude"
cd "$HERE/../.."
PROTOS=$("$PYTHON" -m serving.native.descriptors "$GEN/api.pb" 2>/dev/null)
# Only TensorFlow's C API headers: its include/ also carries a protobuf of its own, which must not
# shadow the system protobuf gRPC is built against.
TF_INCLUDE=$("$PYTHON" -c "import importlib.util, os; print(os.path.join(importlib.util.find_spec('tensorflow').submodule_search_locations[0], 'include'))")
for dir in tensorflow/c tensorflow/core/platform tsl/platform xla/tsl/c; do
  mkdir -p "$BUILD/tfinclude/$(dirname "$dir")"
  ln -sfn "$TF_INCLUDE/$dir" "$BUILD/tfinclude/$dir"
done
# Generated into a scratch folder and copied over only where changed: unchanged sources keep
# their objects (a full build compiles ~80 files, minutes on two cores).
rm -rf "$BUILD/gen.new" && mkdir -p "$BUILD/gen.new"
protoc --descriptor_set_in="$GEN/api.pb" --cpp_out="$BUILD/gen.new" --grpc_out="$BUILD/gen.new" \
  --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" $PROTOS
(cd "$BUILD/gen.new" && find . -type f | while read -r f; do
  cmp -s "$f" "$GEN/$f" || { mkdir -p "$GEN/$(dirname "$f")"; cp "$f" "$GEN/$f"; }
done)
CXXFLAGS="-O2 -std=c++17 -I$GEN -I$BUILD/tfinclude $(pkg-config --cflags grpc++ protobuf)"
export CXXFLAGS BUILD GEN
compile() {
  obj="$BUILD/obj/$(echo "${1#$GEN/}" | tr / _).o"
  if [ ! -f "$obj" ] || [ "$1" -nt "$obj" ]; then g++ $CXXFLAGS -c "$1" -o "$obj"; fi
  echo "$obj"
}
export -f compile
SOURCES=$(find "$GEN" -name '*.cc' | sort)
echo "towerflow-predict: compiling $(echo "$SOURCES" | wc -l) generated files and the server" >&2
OBJECTS=$(printf '%s\n' $SOURCES "$HERE/predict_server.cc" | xargs -P "$(nproc)" -I{} bash -c 'compile {}')
g++ -o "$BUILD/towerflow-predict" $OBJECTS $(pkg-config --libs grpc++ protobuf) -ldl -lpthread
echo "$BUILD/towerflow-predict"
