#!/usr/bin/env bash
# Multi-node, multi-GPU training with DDP under SLURM: 2 nodes x 4 GPUs.
# Lightning reads the SLURM environment (ranks, master address); one task per GPU.
#   sbatch scripts/slurm_ddp.sh configs/conll2003.yaml
#SBATCH --job-name=seqtag
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=4
#SBATCH --gpus-per-node=4
#SBATCH --cpus-per-task=8
#SBATCH --time=02:00:00
set -euo pipefail
CONFIG=${1:-configs/conll2003.yaml}
srun seqtag fit --config "$CONFIG" \
    --trainer.accelerator=gpu --trainer.devices=4 --trainer.num_nodes=2 --trainer.strategy=ddp \
    --trainer.precision=bf16-mixed

# Without SLURM, start one torchrun per node instead (node 0 shown; node 1 uses --node_rank=1):
#   torchrun --nnodes=2 --nproc_per_node=4 --node_rank=0 --master_addr=<node0 host> --master_port=29500 \
#       -m seqtag.cli fit --config "$CONFIG" --trainer.devices=4 --trainer.num_nodes=2 --trainer.strategy=ddp
