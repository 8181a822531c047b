"""A repository whose tests try every way out of a build's sandbox, each passing only when its way out
is closed. What they try is named in `probe.json`, written into the tree by the test that builds it:
the pid of a host process to signal, the runner's pid, files a build must not read, places it must
not write, Volt's Redis port, and a token that the runner holds in its environment.

The tests cannot prove from inside that a write did not reach the host: the test that builds the
probe checks those on the host afterwards.
"""

from __future__ import annotations

import json
from pathlib import Path

PROBE_TESTS = r'''
import json, os, signal, socket, subprocess, sys, unittest
from pathlib import Path

PROBE = json.loads(Path(__file__).resolve().parent.parent.joinpath("probe.json").read_text())


def _readable(path):
    try:
        with open(path, "rb") as fh:
            return fh.read(1 << 20)
    except OSError:
        return None


class WaysOut(unittest.TestCase):
    def test_other_processes_are_invisible(self):
        pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        self.assertNotIn(PROBE["runner_pid"], pids)
        self.assertLess(len(pids), 20, pids)
        for pid in pids:
            for part in ("environ", "cmdline"):
                seen = _readable(f"/proc/{pid}/{part}") or b""
                self.assertNotIn(PROBE["token"].encode(), seen, f"/proc/{pid}/{part}")

    def test_runner_environ_is_out_of_reach(self):
        self.assertIsNone(_readable(f"/proc/{PROBE['runner_pid']}/environ"))

    def test_host_process_cannot_be_signalled(self):
        for pid in (PROBE["victim_pid"], PROBE["runner_pid"]):
            with self.assertRaises(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    def test_environment_holds_no_volt_setting_or_secret(self):
        self.assertEqual([k for k in os.environ if k.startswith(("VOLT_", "REDIS", "RQ_"))], [])
        self.assertNotIn(PROBE["token"], "".join(os.environ.values()))

    def test_redis_refuses_without_the_password(self):
        try:
            with socket.create_connection(("127.0.0.1", PROBE["redis_port"]), timeout=5) as sock:
                sock.sendall(b"SET volt-probe escaped\r\n")
                reply = sock.recv(200)
        except OSError:
            return  # no network, or nothing listening: closed either way
        self.assertFalse(reply.startswith(b"+OK"), reply)

    def test_secret_in_the_runner_home_is_unreadable(self):
        self.assertIsNone(_readable(PROBE["secret_file"]))
        self.assertFalse(Path(PROBE["secret_file"]).parent.exists())

    def test_volt_config_is_unreadable(self):
        self.assertIsNone(_readable(PROBE["config_file"]))

    def test_other_repository_tree_is_unreadable(self):
        self.assertIsNone(_readable(PROBE["other_tree_file"]))

    def test_workspace_dir_shows_nothing_but_this_build(self):
        out = os.path.dirname(os.path.abspath(sys.argv[sys.argv.index("--out") + 1]))
        own = (os.getcwd(), sys.prefix, os.environ["HOME"], out)
        if os.path.exists(".git"):  # and the repository's own mirror, read-only
            own += (subprocess.run(["git", "rev-parse", "--path-format=absolute", "--git-common-dir"],
                                   capture_output=True, text=True, timeout=60).stdout.strip(),)
        seen = []
        for root, dirs, files in os.walk(PROBE["workspace_dir"]):
            if root.startswith(own):
                dirs[:] = []
                continue
            seen += [os.path.join(root, name) for name in files]
        self.assertEqual(seen, [])

    def test_writes_outside_stay_inside(self):
        for place in (PROBE["host_tmp_file"], PROBE["home_file"], PROBE["workspace_file"]):
            try:
                Path(place).parent.mkdir(parents=True, exist_ok=True)
                Path(place).write_text("escaped")
            except OSError:
                pass  # refused outright; the host checks the rest

    def test_link_to_the_mirror_is_read_only(self):
        with self.assertRaises(OSError):
            with open(".git", "w") as fh:
                fh.write("gitdir: /tmp/evil\n")
        with self.assertRaises(OSError):
            os.remove(".git")

    def test_git_reads_its_history_but_not_the_remote(self):
        if not os.path.exists(".git"):
            return  # a tree that is no checkout (the in-process runs): nothing to read
        run = lambda *args: subprocess.run(["git", *args], capture_output=True, text=True, timeout=60)
        self.assertEqual(run("log", "-1", "--format=%s").stdout.strip(), "what to look for")
        self.assertEqual(run("config", "--get", "remote.origin.url").stdout, "")
        self.assertNotEqual(run("tag", "escaped").returncode, 0)
        self.assertNotEqual(run("config", "core.fsmonitor", "touch /tmp/escaped").returncode, 0)

    def test_ordinary_writes_in_the_tree_and_tmp_work(self):
        Path("made-by-test.txt").write_text("ok")
        Path("/tmp/scratch-of-test.txt").write_text("ok")
        self.assertEqual(Path("/tmp/scratch-of-test.txt").read_text(), "ok")
        self.assertEqual(os.environ["HOME"], str(Path.home()))
        self.assertEqual(os.listdir(Path.home()), [])
'''


def probe_files() -> dict[str, str]:
    return {"tests/__init__.py": "", "tests/test_ways_out.py": PROBE_TESTS}


def write_probe(tree: Path, **facts: object) -> None:
    (tree / "probe.json").write_text(json.dumps(facts))
