#!/usr/bin/env bash
# One-shot set-up of the compose stack (the `airflow-init` service), safe to rerun:
#   1. Airflow's metadata DB in PostgreSQL, created or migrated;
#   2. the Airflow `admin` password from AIRFLOW_ADMIN_PASSWORD, written where the simple auth
#      manager reads it (it would otherwise generate one and only print it to the api-server log);
#   3. an empty $TOWERFLOW_HOME/models/models.config, so TF Serving starts (and polls it) before the
#      daily DAG has published a model.
set -euo pipefail

airflow db migrate

: "${AIRFLOW_ADMIN_PASSWORD:?set AIRFLOW_ADMIN_PASSWORD}"
python - <<'PY'
import json, os
from pathlib import Path

path = Path(os.environ.get("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")
            or Path(os.environ["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated")
path.parent.mkdir(parents=True, exist_ok=True)
passwords = json.loads(path.read_text()) if path.exists() and path.read_text().strip() else {}
passwords["admin"] = os.environ["AIRFLOW_ADMIN_PASSWORD"]
path.write_text(json.dumps(passwords) + "\n")
path.chmod(0o600)
print(f"airflow admin password set in {path}")
PY

python - <<'PY'
from towerflow.model_config import write_models_config
from towerflow.settings import get_settings

config = get_settings().models_dir / "models.config"
if config.exists():
    print(f"{config} exists; left as it is")
else:
    config.parent.mkdir(parents=True, exist_ok=True)
    write_models_config(config, [])
    print(f"wrote an empty {config}; the daily DAG adds models as it publishes them")
PY
