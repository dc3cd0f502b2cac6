"""The reference PyTorch Pix2Pix train step, timed like ``profile_pix2pix.py``.

A minimal copy of the networks and the step of Isola et al.'s PyTorch code
(``UnetGenerator``, ``NLayerDiscriminator``, ``Pix2PixModel.optimize_parameters``):
instance norm as there (``InstanceNorm2d(affine=False)``, convolutions with
bias), dropout 0.5, BCE-with-logits (``gan_mode="vanilla"``) + 100 * L1,
Adam(2e-4, beta_1=0.5), on random pairs. It gives the side-by-side figure for
keras-derain's step; it needs a separate environment with torch (CPU):

    /work/torchvenv/bin/python benchmarks/profile_pix2pix_torch.py --size 256

Results: ``benchmarks/results/pix2pix_speed.md``.
"""

import argparse
import os
import time

import torch
from torch import nn


class UnetBlock(nn.Module):
    def __init__(self, outer, inner, submodule=None, outermost=False, innermost=False,
                 dropout=False, input_channels=None):
        super().__init__()
        self.outermost = outermost
        input_channels = input_channels or outer
        norm = lambda channels: nn.InstanceNorm2d(channels)  # noqa: E731 (affine=False)
        downconv = nn.Conv2d(input_channels, inner, 4, 2, 1, bias=True)
        if outermost:
            up = [nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), nn.Tanh()]
            layers = [downconv, submodule, *up]
        elif innermost:
            up = [nn.ReLU(True), nn.ConvTranspose2d(inner, outer, 4, 2, 1), norm(outer)]
            layers = [nn.LeakyReLU(0.2, True), downconv, *up]
        else:
            up = [nn.ReLU(True), nn.ConvTranspose2d(inner * 2, outer, 4, 2, 1), norm(outer)]
            layers = [nn.LeakyReLU(0.2, True), downconv, norm(inner), submodule, *up]
            if dropout:
                layers.append(nn.Dropout(0.5))
        self.model = nn.Sequential(*layers)

    def forward(self, x):
        if self.outermost:
            return self.model(x)
        return torch.cat([x, self.model(x)], 1)


def unet(depth, ngf):
    block = UnetBlock(ngf * 8, ngf * 8, innermost=True)
    for _ in range(depth - 5):
        block = UnetBlock(ngf * 8, ngf * 8, block, dropout=True)
    block = UnetBlock(ngf * 4, ngf * 8, block)
    block = UnetBlock(ngf * 2, ngf * 4, block)
    block = UnetBlock(ngf, ngf * 2, block)
    return UnetBlock(3, ngf, block, outermost=True, input_channels=3)


def patchgan(ndf, n_layers=3):
    layers = [nn.Conv2d(6, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers + 1):
        previous, mult = mult, min(2**n, 8)
        stride = 2 if n < n_layers else 1
        layers += [nn.Conv2d(ndf * previous, ndf * mult, 4, stride, 1),
                   nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
    layers.append(nn.Conv2d(ndf * mult, 1, 4, 1, 1))
    return nn.Sequential(*layers)


def init_weights(module):
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--base-channels", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    depth = {256: 8, 128: 7}.get(args.size, 8)
    generator, discriminator = unet(depth, args.base_channels), patchgan(args.base_channels)
    generator.apply(init_weights)
    discriminator.apply(init_weights)
    g_optimizer = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999))
    d_optimizer = torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
    bce, l1 = nn.BCEWithLogitsLoss(), nn.L1Loss()
    rainy = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    clean = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1

    def train_step():  # Pix2PixModel.optimize_parameters
        generated = generator(rainy)
        for parameter in discriminator.parameters():
            parameter.requires_grad_(True)
        d_optimizer.zero_grad()
        fake = discriminator(torch.cat([rainy, generated.detach()], 1))
        real = discriminator(torch.cat([rainy, clean], 1))
        d_loss = 0.5 * (bce(fake, torch.zeros_like(fake)) + bce(real, torch.ones_like(real)))
        d_loss.backward()
        d_optimizer.step()
        for parameter in discriminator.parameters():
            parameter.requires_grad_(False)
        g_optimizer.zero_grad()
        fake = discriminator(torch.cat([rainy, generated], 1))
        g_loss = bce(fake, torch.ones_like(fake)) + 100.0 * l1(generated, clean)
        g_loss.backward()
        g_optimizer.step()

    for _ in range(args.warmup):
        train_step()
    load = os.getloadavg()[0]
    rates, cpu_seconds = [], []
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        for _ in range(args.steps):
            train_step()
        rates.append(args.batch * args.steps / (time.perf_counter() - start))
        cpu_seconds.append((time.process_time() - cpu_start) / (args.batch * args.steps))
    print(f"torch {torch.__version__} threads {torch.get_num_threads()} size {args.size} "
          f"batch {args.batch} base {args.base_channels} depth {depth} "
          f"params G {sum(p.numel() for p in generator.parameters()):,} "
          f"D {sum(p.numel() for p in discriminator.parameters()):,}")
    print(f"load before {load:.2f} after {os.getloadavg()[0]:.2f}")
    print("pairs/s " + " ".join(f"{rate:.2f}" for rate in rates) + f"  best {max(rates):.2f}")
    print("cpu s/pair " + " ".join(f"{cpu:.3f}" for cpu in cpu_seconds) + f"  min {min(cpu_seconds):.3f}")
    generator.eval()
    forward_rates = []
    with torch.no_grad():
        generator(rainy)
        for _ in range(3):
            start = time.perf_counter()
            for _ in range(args.steps):
                generator(rainy)
            forward_rates.append(args.batch * args.steps / (time.perf_counter() - start))
    print(f"generator forward (inference) pairs/s {max(forward_rates):.2f}")


if __name__ == "__main__":
    main()
