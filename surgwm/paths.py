"""Where each stage reads and writes; `dvc.yaml` declares the same paths as deps and outs."""

from surgwm.params import REPO_ROOT

DATA = REPO_ROOT / "data"
SYNTHETIC = DATA / "synthetic"            # synthesize: the embedded demo dataset (SurgVU layout)
MANIFEST = DATA / "ingest" / "manifest.json"  # ingest: videos, probes and labels
CACHE = DATA / "cache"                    # decode: one uint8 .npy per video (persisted between runs)
DECODED = CACHE / "manifest.json"         # decode: the manifest plus frames cached / failure per video
RUNTIME = REPO_ROOT / ".pipeline"         # scratch state for progress reporting; never versioned
EMBEDDED_ENCODER = REPO_ROOT / "assets" / "vjepa2-tiny-surgical"  # weights.model 'embedded': the shipped tiny encoder
WEIGHTS = DATA / "weights"                # weights: the encoder (config.json + model.safetensors) + weights.json
TRAIN = DATA / "train"                    # train: one dir per run (train.methods key): checkpoint + final weights
FEATURES = DATA / "features"              # train (frozen): encoder outputs per clip, one dir per content key
METRICS = REPO_ROOT / "metrics"           # train/evaluate: metrics/<stage>_<name>.json; failures/ (surgwm/failures.py)
EVALUATE = DATA / "evaluate"              # evaluate/baseline: one dir per name (plots, predictions, split)
REPORTS = REPO_ROOT / "reports"           # report: comparison.md + charts/
REGISTER_RECORD = REPORTS / "register.json"  # register: run ids, version, aliases, the gate's decision
