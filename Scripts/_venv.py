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
