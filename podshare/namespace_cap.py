"""A cap on how many podshare run namespaces exist at once, for podshare's
confined identity (docs/security.md): each namespace it makes holds at most a
quota's worth of the cluster, so the cap bounds what a leaked token can take.
An admission policy cannot count objects, so a validating webhook does:
`podshare namespace-cap` in the runner image, installed by
`podshare namespace-cap-manifest | kubectl apply -f -`
(manifests/namespace-cap.yaml).

- It is asked only about namespaces that podshare's marked identity creates
  (the mark of podshare-confinement; administrators are not capped) and it
  fails closed: while it is down, the identity makes no namespace.
- Counted: every namespace labelled as a run's (app.kubernetes.io/managed-by=
  podshare and a podshare.io/run-id), whoever made it, terminating ones too
  (they hold what they hold until gone), and those it admitted in the last
  PENDING_FOR seconds that the list does not show yet (creates side by side).
- The cap is the `cap` of the ConfigMap podshare-namespace-cap beside it, read
  at every request: an administrator changes it with kubectl edit.
- It lives in the namespace podshare-cap, a name no run can take (run ids have
  6 to 40 characters), and answers a create of the run id CHECK_RUN_ID, dry
  run or not, with a refusal that says it is in force: the start-of-run check
  (podshare/confinement.py)."""
from __future__ import annotations

import base64
import json
import ssl
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from . import MANAGED_BY, RUN_ID_LABEL
from .manifests import MANIFESTS, fill

NAME = "podshare-namespace-cap"  # the webhook's objects, the ConfigMap, the Service
NAMESPACE = "podshare-cap"
WEBHOOK = "namespace-cap.podshare.io"
CHECK_RUN_ID = "namespace-cap-check"
IN_FORCE = f"{NAME} is in force"
DEFAULT_CAP = 20  # a run and its workers take a few; the nightly none (its namespace is the administrator's)
PENDING_FOR = 30.0
TEMPLATE = MANIFESTS / "namespace-cap.yaml"
TLS_DIR = Path("/etc/podshare-namespace-cap")
PORT = 8443
RUN_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items()) + f",{RUN_ID_LABEL}"


def is_run_namespace(labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in MANAGED_BY.items()) and bool(labels.get(RUN_ID_LABEL))


@dataclass(frozen=True)
class Answer:
    allowed: bool
    message: str = ""


def decide(name: str, labels: dict[str, str], existing: set[str], cap: int) -> Answer:
    """The answer to a create of namespace `name`, with `existing` the run
    namespaces counted now (listed and recently admitted)."""
    if not is_run_namespace(labels):
        return Answer(True)  # not a run's: podshare-confinement refuses it, not a count
    others = existing - {name}
    count = f"{len(others)} podshare run namespaces exist and the cap is {cap}"
    if labels[RUN_ID_LABEL] == CHECK_RUN_ID:
        return Answer(False, f"{IN_FORCE}: {count} (the run id {CHECK_RUN_ID} is its check's)")
    if len(others) >= cap:
        return Answer(False, f"{NAME}: {count}; delete finished runs' namespaces (podshare gc) or raise the "
                             f"ConfigMap {NAME}'s cap in namespace {NAMESPACE}")
    return Answer(True)


class Counter:
    """The count at each request: the API's list, plus what this process admitted
    a moment ago (one replica, one lock: two creates side by side are counted in turn)."""

    def __init__(self, kube, clock=time.monotonic) -> None:
        self.kube, self.clock = kube, clock
        self.recent: dict[str, float] = {}
        self.lock = threading.Lock()

    def cap(self) -> int:
        return int(self.kube.configmap_data(NAMESPACE, NAME).get("cap", DEFAULT_CAP))

    def review(self, request: dict) -> Answer:
        if request.get("operation") != "CREATE" or request.get("kind", {}).get("kind") != "Namespace":
            return Answer(True)
        meta = request.get("object", {}).get("metadata", {})
        name, labels = meta.get("name") or request.get("name", ""), meta.get("labels") or {}
        with self.lock:
            now = self.clock()
            self.recent = {n: t for n, t in self.recent.items() if now - t < PENDING_FOR}
            listed = {ns.metadata.name for ns in self.kube.list_namespaces(RUN_SELECTOR)}
            answer = decide(name, labels, listed | set(self.recent), self.cap())
            if answer.allowed and is_run_namespace(labels) and not request.get("dryRun"):
                self.recent[name] = now
        return answer


def response(review: dict, answer: Answer) -> dict:
    """An AdmissionReview v1 response to `review`."""
    body = {"uid": review["request"]["uid"], "allowed": answer.allowed}
    if not answer.allowed:
        body["status"] = {"code": 403, "reason": "Forbidden", "message": answer.message}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": body}


def serve(counter: Counter, port: int = PORT, tls_dir: Path = TLS_DIR) -> None:
    """HTTPS on `port`: POST /namespaces (AdmissionReview), GET /healthz."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self._send(200 if self.path == "/healthz" else 404, b"ok\n", "text/plain")

        def do_POST(self):  # noqa: N802
            review = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            try:
                answer = counter.review(review["request"])
            except Exception as exc:  # noqa: BLE001 (fail closed, and say why)
                answer = Answer(False, f"{NAME} could not count: {exc}")
            print(f"{review['request'].get('name')}: {'admitted' if answer.allowed else answer.message}", flush=True)
            self._send(200, json.dumps(response(review, answer)).encode(), "application/json")

        def _send(self, code, body, content_type):
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):  # the decisions are printed above
            pass

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls_dir / "tls.crt", tls_dir / "tls.key")
    server = ThreadingHTTPServer(("", port), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"{NAME}: serving on :{port}", flush=True)
    server.serve_forever()


def certificates(days: int = 365) -> dict[str, str]:
    """A CA of its own and the Service's serving certificate, by openssl (base64 PEM)."""
    host = f"{NAME}.{NAMESPACE}.svc"
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)

        def openssl(*args):
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key")
        openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", f"/CN={NAME}-ca", "-days", str(days),
                "-out", "ca.crt")
        openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "tls.key")
        openssl("req", "-new", "-key", "tls.key", "-subj", f"/CN={host}", "-out", "tls.csr")
        (d / "ext").write_text(f"basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                               f"extendedKeyUsage=serverAuth\nsubjectAltName=DNS:{host}\n")
        openssl("x509", "-req", "-in", "tls.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", str(days), "-extfile", "ext", "-out", "tls.crt")
        return {name: base64.b64encode((d / f"{name}").read_bytes()).decode()
                for name in ("ca.crt", "tls.crt", "tls.key")}


def render(image: str, *, cap: int = DEFAULT_CAP, pull_policy: str = "IfNotPresent") -> str:
    """manifests/namespace-cap.yaml filled: the image, the cap and fresh certificates
    (valid a year: render and apply again to renew)."""
    pem = certificates()
    return fill(TEMPLATE.read_text(), {"RUNNER_IMAGE": image, "PULL_POLICY": pull_policy, "CAP": f'"{cap}"',
                                       "CA_BUNDLE": pem["ca.crt"], "TLS_CRT": pem["tls.crt"],
                                       "TLS_KEY": pem["tls.key"]})


def main() -> int:
    """The runner image's `podshare namespace-cap`."""
    from .kube import Kube
    serve(Counter(Kube()))
    return 0
