"""The agent's SloPolicy watch (scx_slo.agent.policies) against tests/fake_kube_api.py:
the official kubernetes client over HTTPS on loopback, configured from a kubeconfig
as on a node, through list, watch, bookmarks, 410 Gone, dropped streams, server
errors and status write-back."""
from __future__ import annotations

import time

import pytest

from fake_kube_api import FakeKubeApi
from vm.polling import wait_for
from scx_slo.agent.policies import PolicyApiError, PolicyWatch, _under_root, api_client
from scx_slo.settings.cluster import Verdict, merge

pytest.importorskip("kubernetes")

USER_DATA = '[scheduler]\n'


def slo(name: str, p99: str = "200ms", **extra) -> dict:
    spec = {"classes": [{"name": name, "p99": p99}], **extra}
    return {"metadata": {"name": name}, "spec": spec}


@pytest.fixture
def api():
    with FakeKubeApi(bookmark_s=0.2) as server:
        yield server


@pytest.fixture
def client(api, tmp_path):
    c = api_client(str(api.kubeconfig(tmp_path / "kubeconfig")))
    yield c
    c.close()


def names(watch: PolicyWatch) -> list[str] | None:
    snap = watch.snapshot()
    return None if snap is None else sorted(p.name for p in snap)


def test_list_then_watch_follows_adds_changes_and_deletes(api, client):
    api.apply(slo("web"))
    with PolicyWatch(client, read_timeout=5, backoff=(0.1,)) as w:
        assert wait_for(lambda: names(w) == ["web"], 10)
        w.changed.clear()
        api.apply(slo("api", "100ms"))
        assert wait_for(lambda: names(w) == ["api", "web"], 10)
        assert w.changed.is_set()
        api.apply(slo("web", "300ms"))
        assert wait_for(lambda: next(p for p in w.snapshot() if p.name == "web").spec
                        ["classes"][0]["p99"] == "300ms", 10)
        gen = next(p for p in w.snapshot() if p.name == "web").generation
        assert gen == 2
        api.delete("api")
        assert wait_for(lambda: names(w) == ["web"], 10)
        assert api.lists() == 1            # all of it by one list and its watch
    assert any("allowWatchBookmarks=" in p for _, p in api.requests)


def test_the_api_server_unreachable_is_no_policy_yet(tmp_path):
    api = FakeKubeApi()                          # never started: nothing listens
    api.server.server_close()
    c = api_client(str(api.kubeconfig(tmp_path / "kubeconfig")))
    with PolicyWatch(c, read_timeout=1, backoff=(0.1,)) as w:
        time.sleep(0.5)
        assert w.snapshot() is None              # the node's user-data stays the config
    c.close()


def test_410_gone_lists_again(api, client):
    api.apply(slo("web"))
    with PolicyWatch(client, read_timeout=5, backoff=(0.1,)) as w:
        assert wait_for(lambda: names(w) == ["web"], 10)
        assert wait_for(lambda: api.watches() >= 1, 10)
        time.sleep(1.2)              # a watch that ends at once would be backed off
        # the watch is cut, and the server forgets the history it would resume from
        api.apply(slo("api"))
        api.compact()
        assert wait_for(lambda: api.lists() >= 2 and names(w) == ["api", "web"], 15), \
            api.requests
    assert api.gone >= 1, api.requests


def test_a_dropped_watch_resumes_from_the_last_resource_version(api, client):
    api.apply(slo("web"))
    with PolicyWatch(client, read_timeout=5, backoff=(0.1,)) as w:
        assert wait_for(lambda: names(w) == ["web"], 10)
        assert wait_for(lambda: api.watches() >= 1, 10)
        time.sleep(1.2)                          # bookmarks move the watch on
        api.drop_watches()
        api.apply(slo("api"))
        assert wait_for(lambda: names(w) == ["api", "web"], 10)
        assert api.lists() == 1                  # resumed, not listed again
        resumed = [p for m, p in api.requests if "watch=" in p][-1]
        assert "resourceVersion=" in resumed


def test_server_errors_back_off_and_recover(api, client):
    api.apply(slo("web"))
    api.fail_next(3, 503)
    with PolicyWatch(client, read_timeout=5, backoff=(0.1, 0.2)) as w:
        assert wait_for(lambda: names(w) == ["web"], 15)
    assert api.failed == 3 and api.lists() == 4


def test_a_bad_token_is_retried_not_fatal(api, tmp_path):
    api.token = "another"
    c = api_client(str(api.kubeconfig(tmp_path / "kubeconfig")))
    api.token = "test-token"
    with PolicyWatch(c, read_timeout=5, backoff=(0.1,)) as w:
        assert wait_for(lambda: len(api.requests) >= 2, 10)
        assert w.snapshot() is None
    c.close()


def test_status_says_whether_this_node_accepted_it(api, client):
    api.apply(slo("web"))
    api.apply({"metadata": {"name": "bad"}, "spec": {"classes": [{"name": "x", "p99": "1ns"}]}})
    with PolicyWatch(client, read_timeout=5, backoff=(0.1,)) as w:
        assert wait_for(lambda: names(w) == ["bad", "web"], 10)
        m = merge(USER_DATA, w.snapshot())
        assert w.report(m.verdicts) == 2
        web, bad = api.objects["web"]["status"], api.objects["bad"]["status"]
        assert web["observedGeneration"] == 1
        assert web["conditions"][0]["type"] == "Accepted"
        assert web["conditions"][0]["status"] == "True"
        assert bad["conditions"][0]["status"] == "False"
        assert bad["conditions"][0]["message"] == ("SloPolicy bad: spec.classes[0].p99: '1ns' "
                                                   "is out of range: allowed 100us..60s")
        assert {ct for _, ct, _ in api.patches} == {"application/merge-patch+json"}
        # once the status is back in the watched objects, the same verdicts write nothing
        assert wait_for(lambda: all((p.name in api.objects) for p in w.snapshot()) and
                        w.report(m.verdicts) == 0, 10)
        # a status change is not a policy change
        w.changed.clear()
        w.report({"web": Verdict("web", 1, False, ("x",))})
        time.sleep(0.5)
        assert not w.changed.is_set()


def test_kubeconfig_paths_read_under_the_host_root(api, tmp_path):
    root = tmp_path / "rootfs"
    (root / "etc/kubernetes/pki").mkdir(parents=True)
    (root / "etc/kubernetes/pki/ca.crt").write_bytes(api.ca.read_bytes())
    (root / "etc/kubernetes/kubelet").mkdir(parents=True)
    api.kubeconfig(root / "etc/kubernetes/kubelet/kubeconfig", ca="/etc/kubernetes/pki/ca.crt")
    api.apply(slo("web"))
    c = api_client("/etc/kubernetes/kubelet/kubeconfig", host_root=str(root))
    with PolicyWatch(c, read_timeout=5, backoff=(0.1,)) as w:
        assert wait_for(lambda: names(w) == ["web"], 10)
    c.close()


def test_a_missing_kubeconfig_is_named(tmp_path):
    with pytest.raises(PolicyApiError, match="kubelet/kubeconfig"):
        api_client("/etc/kubernetes/kubelet/kubeconfig", host_root=str(tmp_path))


def test_bottlerocket_kubeconfig_under_the_host_root():
    """The kubelet's kubeconfig as Bottlerocket renders it (aws-k8s: the exec plugin),
    read from a host container: files under the root, the plugin chrooted into it."""
    doc = {"clusters": [{"name": "kubernetes", "cluster": {
               "certificate-authority": "/etc/kubernetes/pki/ca.crt",
               "server": "https://example.eks.amazonaws.com"}}],
           "users": [{"name": "kubelet", "user": {"exec": {
               "apiVersion": "client.authentication.k8s.io/v1beta1",
               "command": "/usr/bin/aws-iam-authenticator",
               "args": ["token", "-i", "my-cluster", "--region", "us-west-2"]}}}]}
    out = _under_root(doc, "/.bottlerocket/rootfs")
    assert out["clusters"][0]["cluster"]["certificate-authority"] == \
        "/.bottlerocket/rootfs/etc/kubernetes/pki/ca.crt"
    assert out["users"][0]["user"]["exec"]["command"] == "chroot"
    assert out["users"][0]["user"]["exec"]["args"] == [
        "/.bottlerocket/rootfs", "/usr/bin/aws-iam-authenticator", "token", "-i", "my-cluster",
        "--region", "us-west-2"]
    assert doc["users"][0]["user"]["exec"]["command"] == "/usr/bin/aws-iam-authenticator"
