"""Make your own VAE multi-rate: a plain conv VAE for binary MNIST, gated with mrvae's multi-rate layers,
trained once with mrvae's trainer and evaluated at several betas (its rate-distortion curve).

    python docs/examples/own_vae.py --data-dir ../shared/data --epochs 1
"""
import argparse

import torch
from torch import nn

from deep.evaluate import evaluate_run
from deep.models import DecoderOutput, EncoderOutput, GaussianLatentVAE, get_distortion, register_family
from deep.train import TrainConfig, train
from linvae.conditioning import BetaRange, GatedConv2d, GatedConvTranspose2d, GatedLinear


class ConvVAE(GaussianLatentVAE):
    """28x28 binary images -> 16 latents. Each gated layer scales its output channels by a gate of beta
    (sigmoid in the encoder, sqrt(relu(1 - e^x)) in the decoder); ``mr=False`` builds the same net ungated."""

    def __init__(self, mr: bool = True, latent_dim: int = 16, beta_range=(0.01, 10.0)):
        super().__init__()
        self.is_mr, self.latent_dim, self.beta_range = mr, latent_dim, BetaRange(*beta_range)
        self._config = {"mr": mr, "latent_dim": latent_dim, "beta_range": list(beta_range)}  # rebuild arguments
        enc, dec = ("sigmoid", "sqrt") if mr else (None, None)          # None: an ordinary layer
        self.conv1 = GatedConv2d(1, 32, 4, 2, 1, gate=enc)               # 28 -> 14
        self.conv2 = GatedConv2d(32, 64, 4, 2, 1, gate=enc)              # 14 -> 7
        self.head = nn.Linear(64 * 7 * 7, 2 * latent_dim)                # mu and log-variance
        self.fc = GatedLinear(latent_dim, 64 * 7 * 7, gate=dec)
        self.deconv = GatedConvTranspose2d(64, 32, 4, 2, 1, gate=dec)   # 7 -> 14
        self.out = nn.ConvTranspose2d(32, 1, 4, 2, 1)                    # 14 -> 28, Bernoulli logits
        self.distortion = get_distortion("bernoulli")

    def encode(self, x, beta):
        u = self.hyper_input(beta, x.shape[0], x)   # standardised log beta; None for a beta-VAE
        h = torch.relu(self.conv2(torch.relu(self.conv1(x, u)), u))
        return EncoderOutput(*self.head(h.flatten(1)).chunk(2, dim=1))

    def decode(self, z, beta):
        u = self.hyper_input(beta, z.shape[0], z)
        h = torch.relu(self.fc(z, u)).reshape(-1, 64, 7, 7)
        return DecoderOutput(self.out(torch.relu(self.deconv(h, u))))


register_family("own_conv", datasets=("mnist",), replace=True,
                build=lambda config, data: ConvVAE(config.mr, beta_range=(config.beta_a, config.beta_b)),
                rebuild=lambda model_config: ConvVAE(**model_config))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", default=None, help="data root (default: $MRVAE_DATA)")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--max-train-examples", type=int, default=None, help="train on a subset (reduced protocol)")
    p.add_argument("--eval-examples", type=int, default=None, help="evaluate on the first N test images")
    p.add_argument("--out", default="runs")
    args = p.parse_args(argv)
    config = TrainConfig(dataset="mnist", arch="own_conv", epochs=args.epochs, data_dir=args.data_dir,
                         max_train_examples=args.max_train_examples, out_dir=args.out, hyper_lr_mult=30.0)
    run_dir = train(config, progress=False)                        # one MR-VAE for every beta in [0.01, 10]
    rd = evaluate_run(run_dir, n_betas=5, max_examples=args.eval_examples, images=False)
    print(f"{'beta':>8} {'rate':>8} {'distortion':>11}   (nats per image, {rd['evaluation']['n_examples']} test images)")
    for beta, rate, distortion in zip(rd["beta"], rd["rate"], rd["distortion"]):
        print(f"{beta:8.3g} {rate:8.2f} {distortion:11.2f}")
    return rd


if __name__ == "__main__":
    main()
