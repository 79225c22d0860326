"""A W&B server on 127.0.0.1 that answers what a run needs (login, run creation, file uploads,
the history stream), so the real wandb client runs online in tests, and a test can take the
server away mid-run. It stores nothing: what a run logged is read back from the run's own file."""
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet: the test's output is the trial's
        pass

    def _answer(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length", 0)))

    def do_GET(self):  # the sweep's reachability check
        self._answer({})

    def do_PUT(self):  # a run file's upload
        self._body()
        self._answer({})

    def do_POST(self):
        raw = self._body()
        if self.path.endswith("/file_stream"):  # history, summary, console lines
            self.server.streamed += 1
            return self._answer({"exitcode": None, "limits": {}})
        request = json.loads(raw or b"{}")
        operation, variables = request.get("operationName") or "", request.get("variables") or {}
        if operation == "Viewer":
            return self._answer({"data": {"viewer": {"id": "u1", "entity": "tester", "username": "tester",
                                                     "flags": "{}", "teams": {"edges": []}}}})
        if operation == "UpsertBucket":
            self.server.runs.add(variables.get("name"))
            return self._answer({"data": {"upsertBucket": {"inserted": True, "bucket": {
                "id": "bucket", "name": variables.get("name"), "displayName": variables.get("displayName") or "run",
                "description": None, "config": "{}", "sweepName": None, "historyLineCount": 0,
                "project": {"id": "project", "name": variables.get("project") or "project",
                            "entity": {"id": "entity", "name": variables.get("entity") or "tester"}}}}}})
        if operation == "CreateRunFiles":
            host = self.headers["Host"]
            return self._answer({"data": {"createRunFiles": {"runID": "bucket", "uploadHeaders": [], "files": [
                {"name": f, "uploadUrl": f"http://{host}/storage/{f}"} for f in variables.get("files", [])]}}})
        return self._answer({"data": {}})  # feature and organisation queries: nothing to say


class FakeWandbServer(ThreadingHTTPServer):
    """url: set as WANDB_BASE_URL. stop() takes the server away (connections refused from then on)."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.runs: set = set()
        self.streamed = 0
        self.url = f"http://127.0.0.1:{self.server_address[1]}"
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
