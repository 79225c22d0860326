"""Does importing the project's modules initialise CUDA? (Decides whether the sweep process may
start trial processes by fork.) Prints one line per stage."""
import importlib
import pkgutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch  # noqa: E402

print(f"after torch: cuda initialised={torch.cuda.is_initialized()}")
names = []
for package in ("trainers", "sweeper"):
    try:
        pkg = importlib.import_module(package)
    except ImportError:
        continue
    names.append(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if info.name != "__main__":
            importlib.import_module(f"{package}.{info.name}")
            names.append(f"{package}.{info.name}")
print(f"after importing {len(names)} project modules ({', '.join(names)}): cuda initialised={torch.cuda.is_initialized()}")
import peft  # noqa: E402,F401

print(f"after import peft (bitsandbytes): cuda initialised={torch.cuda.is_initialized()}")
