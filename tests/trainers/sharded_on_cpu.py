"""`paretoalign` under accelerate's FSDP or DeepSpeed on CPU processes (gloo): the test stand-in for a GPU launch.

accelerate picks FSDP or DeepSpeed only where it finds an accelerator device: with CPU processes it chooses
plain multi-CPU data parallelism and ignores the FSDP and DeepSpeed plugins.  torch's FSDP1 and FSDP2 run on
CPU tensors over gloo, and so does DeepSpeed (its CPU accelerator, gloo), so this script tells accelerate's
process state that the launch is a multi-GPU one (backend gloo, device cpu) and then runs the command line
unchanged: accelerate's own plugins, ``prepare`` and state-dict calls do the rest, as they would on GPUs.
Run it where accelerate would run ``-m paretoalign.cli`` (tests/trainers/test_sharding.py does):

    accelerate launch --config_file examples/accelerate/fsdp.yaml --mixed_precision no \
        --fsdp_sync_module_states false --fsdp_cpu_ram_efficient_loading false --num_processes 2 \
        tests/trainers/sharded_on_cpu.py train --config examples/pama_tiny.yaml --output-dir runs/pama-tiny-fsdp
    accelerate launch --config_file examples/accelerate/deepspeed_zero3.yaml --mixed_precision no \
        --num_processes 2 tests/trainers/sharded_on_cpu.py train --config examples/pama_tiny.yaml ...

(``sync_module_states`` and ``cpu_ram_efficient_loading`` need a GPU to broadcast from; bf16 is a GPU setting.)
"""

import os
import sys

from accelerate.state import PartialState
from accelerate.utils import DistributedType


def _multi_gpu_on_cpu(self, cpu=False, sagemaker_dp=False, backend=None):
    return "gloo", DistributedType.MULTI_GPU


PartialState._prepare_backend = _multi_gpu_on_cpu
os.environ.setdefault("ACCELERATE_TORCH_DEVICE", "cpu")  # accelerate's device override: no CUDA lookup

from paretoalign.cli import main  # noqa: E402  (after the patch: the CLI builds its Accelerator lazily anyway)

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
