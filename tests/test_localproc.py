"""Child processes started by `larrylab.localproc` run the code their environment names."""

from __future__ import annotations

import textwrap
from pathlib import Path

import httpx
import pytest

import larrylab
from larrylab.localproc import free_port, start

# A stand-in `larrylab` package: `python -m larrylab PORT` answers 200 on every GET and says
# which file it runs from.
FAKE_MAIN = textwrap.dedent(
    """
    import http.server, sys

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = __file__.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


def _stand_in(tmp_path: Path) -> Path:
    """A checkout holding only the stand-in package."""
    other = tmp_path / "other-checkout"
    (other / "larrylab").mkdir(parents=True)
    (other / "larrylab" / "__init__.py").write_text("")
    (other / "larrylab" / "__main__.py").write_text(FAKE_MAIN)
    return other


def test_a_child_in_its_own_folder_runs_the_checkout_pythonpath_names(tmp_path: Path) -> None:
    """A benchmark variant with `PYTHONPATH=<checkout>` must run that checkout's code even
    when the benchmark runs from this one (`python -m` imports from the working folder first)."""
    other = _stand_in(tmp_path)
    home = tmp_path / "home"
    port = free_port()
    proc = start(
        "fake",
        [str(port)],
        port=port,
        log_dir=home,
        env={"PYTHONPATH": str(other)},
        cwd=home,
        timeout=30,
    )
    try:
        ran = httpx.get(f"{proc.url}/", timeout=5).text
    finally:
        proc.stop()
    assert Path(ran) == other / "larrylab" / "__main__.py"


def test_a_child_in_this_checkout_runs_this_checkouts_code(tmp_path: Path) -> None:
    """Why `cwd` matters: started inside this checkout, the same child ignores `PYTHONPATH`
    and runs the real `larrylab`, which refuses the stand-in's arguments."""
    other = _stand_in(tmp_path)
    checkout = Path(larrylab.__file__).resolve().parent.parent
    port = free_port()
    with pytest.raises(RuntimeError, match="exited with code"):
        start(
            "fake",
            [str(port)],
            port=port,
            log_dir=tmp_path / "home",
            env={"PYTHONPATH": str(other)},
            cwd=checkout,
            timeout=30,
        )
