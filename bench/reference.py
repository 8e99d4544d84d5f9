"""What the bench/compare_*.py drivers share: where the reference
environments are, and how a benchmark's JSON lines are read back.

    from reference import env_python, json_rows
    torch_py = env_python("bench")          # scripts/reference-env --path bench + /bin/python
    rows = json_rows([loom, "bench", "ps", ...], timeout=600, keep="throughput_GBs")
"""
import json
import os
import subprocess

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)


def env_python(name):
    """The interpreter of a reference environment (made or not: see scripts/reference-env)."""
    out = subprocess.run([os.path.join(root, "scripts", "reference-env"), "--path", name],
                         check=True, capture_output=True, text=True, timeout=30).stdout.strip()
    return os.path.join(out, "bin", "python")


def json_rows(cmd, timeout, keep=None):
    """Runs cmd and returns the JSON objects on its stdout (from the first '{' of
    a line, so launcher prefixes like "[worker 0] " are skipped; with `keep`, only
    lines naming that field). Echoes the command and the rows as '#' lines, and
    the end of stderr when it failed or printed none."""
    print("# " + " ".join(cmd), flush=True)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    rows = [json.loads(l[l.index("{"):]) for l in p.stdout.splitlines()
            if "{" in l and (keep is None or keep in l)]
    if p.returncode != 0 or not rows:
        print(f"# failed ({p.returncode}): {p.stderr[-1500:]}", flush=True)
    for r in rows:
        print("#   " + json.dumps(r), flush=True)
    return rows
