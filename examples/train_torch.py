"""Train a 2-D Flow Matching model in plain PyTorch with flowspec's definitions.

    python examples/train_torch.py [STEPS]      (or FLOWSPEC_EXAMPLE_STEPS=STEPS)

Data: eight Gaussians on a circle of radius 3. Path: the OT path (paper eq. 20).
Every Flow Matching step is a flowspec core function applied to torch tensors.
"""

import math
import os
import sys

import torch

import flowspec as fs

steps = int(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("FLOWSPEC_EXAMPLE_STEPS", 2000))
torch.set_num_threads(1)  # a small model: more threads than free cores only slow it down
torch.manual_seed(0)
angles = 2 * math.pi * torch.arange(8) / 8
centers = 3.0 * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)


def sample_data(n: int) -> torch.Tensor:
    return centers[torch.randint(0, 8, (n,))] + 0.2 * torch.randn(n, 2)


class Field(torch.nn.Module):
    """v_theta(t, x): an MLP on (x, t), with flowspec's field signature (t of shape (B,))."""

    def __init__(self, width: int = 128) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, width), torch.nn.SiLU(),
            torch.nn.Linear(width, width), torch.nn.SiLU(),
            torch.nn.Linear(width, 2),
        )  # fmt: skip

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([x, t[:, None]], dim=1))


path = fs.GaussianPath(fs.CondOT(sigma_min=1e-3))
model = Field()
opt = torch.optim.Adam(model.parameters(), lr=2e-3)
for step in range(steps):
    x1 = sample_data(256)
    x0 = torch.randn_like(x1)
    t = torch.rand(x1.shape[0])
    x_t, target = path.sample_and_target(x0, x1, t)  # eq. 22 and eq. 23
    loss = fs.cfm_loss(model(t, x_t), target)  # eq. 9
    opt.zero_grad()
    loss.backward()
    opt.step()
    if step % max(1, steps // 5) == 0 or step == steps - 1:
        print(f"step {step:5d}  CFM loss {loss.item():.4f}")

with torch.no_grad():
    samples = fs.euler(model, torch.randn(2000, 2), steps=50)  # x <- x + h v(t, x)
distance = torch.cdist(samples, centers).min(dim=1).values
print(f"median distance of a sample to the nearest mode: {distance.median().item():.3f}")
print(f"fraction of samples within 1 of a mode: {(distance < 1).float().mean().item():.3f}")
