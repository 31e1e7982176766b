"""Inside the sched_ext test VM: the fake Bottlerocket API as a script, `scx-slo settings
apply` through it, and the agent-side load of what was applied (guest Python 3.11)."""
import pytest

pytestmark = pytest.mark.vm

SCRIPT = r"""
set -e
cd /opt/scx-slo/src
python3 tests/fake_bottlerocket_api.py --socket /tmp/settings-api.sock > /tmp/fake-api.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf /tmp/settings-state /tmp/settings-user-data' EXIT
for i in $(seq 100); do [ -S /tmp/settings-api.sock ] && break; sleep 0.1; done
scx-slo settings apply settings/examples/guide-demo.toml --socket /tmp/settings-api.sock
python3 - <<'PY'
import base64
from scx_slo.settings.apiclient import ApiClient
from scx_slo.settings import store
hc = ApiClient("/tmp/settings-api.sock").host_container("scx-slo")
open("/tmp/settings-user-data", "wb").write(base64.b64decode(hc["user-data"]))
config, source, error = store.load_effective("/tmp/settings-user-data", "/tmp/settings-state")
print("SOURCE", source, "ERROR", error)
print("CLASSES", [c.name for c in config.classes])
open("/tmp/settings-user-data", "w").write('[scheduler]\nslice = "-1ms"\n')
config2, source2, error2 = store.load_effective("/tmp/settings-user-data", "/tmp/settings-state")
print("AFTER-BAD", source2, config2 == config, "negative" in str(error2))
PY
"""


def test_apply_and_load_in_guest(vm):
    r = vm.run(["sh", "-c", SCRIPT], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "committed: settings.host-containers.scx-slo.user-data" in r.stdout
    assert "SOURCE user-data ERROR None" in r.stdout
    assert "CLASSES ['default', 'frontend', 'interactive']" in r.stdout
    assert "AFTER-BAD last-good True True" in r.stdout
