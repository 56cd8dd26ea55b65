"""Train a Discrete Flow Matching model on a checkerboard of tokens, in plain PyTorch.

    python examples/discrete_checkerboard.py [STEPS] [PICTURE.png]

Data: the cells (i, j) of a 16 x 16 grid whose 4 x 4 block is "black"; a sample is the
sequence of its two coordinates, two tokens of a vocabulary of 16 values plus a mask
token. Path: the mixture path with kappa_t = t^2 and a mask source. Loss: the
cross-entropy of the posterior. Sampler: the jump (Euler) step with 64 steps. Every
Discrete Flow Matching step is a flowspec.discrete function applied to torch tensors.
"""

import os
import sys
import time

import torch

from flowspec import discrete as fd
from flowspec.backends import torch as fst

# one thread: at batch 512 and width 256 the matrices are small, and on a busy machine
# a second intra-op thread waits for a core (300 steps: 12 s on one thread, 242 s on
# two, measured on a loaded two-core machine); FLOWSPEC_EXAMPLE_THREADS changes it
torch.set_num_threads(int(os.environ.get("FLOWSPEC_EXAMPLE_THREADS", 1)))
steps = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FLOWSPEC_EXAMPLE_STEPS", 1000))
torch.manual_seed(0)
GRID, BLOCK, MASK = 16, 4, 16
cells = torch.cartesian_prod(torch.arange(GRID), torch.arange(GRID))
black = cells[((cells[:, 0] // BLOCK + cells[:, 1] // BLOCK) % 2) == 0]  # (128, 2) tokens
path = fd.MixturePath(fd.Polynomial(2.0), vocab_size=GRID + 1, mask_token=MASK)


class Denoiser(torch.nn.Module):
    """logits of p_{1|t}(. | x_t) for each of the two tokens, from (x_t, t)."""

    def __init__(self, width: int = 256) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(GRID + 1, 64)
        self.net = torch.nn.Sequential(
            torch.nn.Linear(2 * 64 + 1, width), torch.nn.SiLU(),
            torch.nn.Linear(width, width), torch.nn.SiLU(),
            torch.nn.Linear(width, 2 * (GRID + 1)),
        )  # fmt: skip

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        h = torch.cat([self.embed(x).flatten(1), t[:, None].float()], dim=1)
        return self.net(h).view(-1, 2, GRID + 1)


model = Denoiser()
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
start = time.perf_counter()
for step in range(steps):
    x1 = black[torch.randint(0, len(black), (512,))]
    x0 = torch.full_like(x1, MASK)
    t = torch.rand(512)
    x_t = fst.discrete_sample(path, x0, x1, t)  # x_t ~ p_t(. | x0, x1)
    loss = fd.cross_entropy(x1, logits=model(t, x_t))  # -sum_i log p_{1|t}(x1^i | x_t)
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % max(1, steps // 5) == 0 or step == steps - 1:
        print(f"step {step:5d}  cross-entropy {loss.item():.4f}")
print(f"training: {time.perf_counter() - start:.1f} s on {torch.get_num_threads()} thread(s)")


def rate(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    logits = model(t, x).double()
    logits[..., MASK] = -torch.inf  # the data never hold the mask token
    return path.posterior_to_rate(x, t, logits=logits)  # u = kd/(1-k) (p_{1|t} - delta_x)


with torch.no_grad():
    x0 = torch.full((4000, 2), MASK)
    samples = fst.discrete_euler(rate, x0, steps=64, dtype=torch.float64)
on_black = ((samples[:, 0] // BLOCK + samples[:, 1] // BLOCK) % 2 == 0) & (samples < GRID).all(1)
print(f"fraction of samples on the black cells: {on_black.float().mean().item():.3f}")

if len(sys.argv) > 2:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = torch.zeros(GRID, GRID)
    ok = (samples < GRID).all(1)
    counts.index_put_((samples[ok, 1], samples[ok, 0]), torch.ones(int(ok.sum())), accumulate=True)
    fig, axes = plt.subplots(1, 2, figsize=(8, 4))
    data = torch.zeros(GRID, GRID)
    data[black[:, 1], black[:, 0]] = 1.0
    for ax, img, title in ((axes[0], data, "data (black cells)"), (axes[1], counts, "samples")):
        ax.imshow(img, origin="lower", cmap="Greys")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Discrete Flow Matching on a 16 x 16 checkerboard of tokens (4000 samples)")
    fig.tight_layout()
    fig.savefig(sys.argv[2], dpi=100)
