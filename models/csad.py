"""The networks of CSAD (W. Zhu, H. Zheng, H. Liao, W. Li, J. Luo, *Learning Bias-Invariant Representation by
Cross-Sample Mutual Information Minimization*, ICCV 2021) for Colored-MNIST, as its public code builds them.

* :class:`CSADNet` is f, the content branch D_c and the digit classifier as one module: ``f`` maps an image to
  1024 features (conv5x5 3->64, ReLU, max-pool 2, conv5x5 64->64, ReLU, max-pool 2, no padding), ``content``
  is D_c (Linear 1024->128, no activation), ``classify`` the classifier (128->64, LeakyReLU, 64->classes).
  ``forward`` returns ``(f's features, logits)`` like the paper's f∘g, so evaluation treats both alike.
* :class:`CSADBias` is the bias side: D_b (Linear 1024->128), three heads 128->64->LeakyReLU->bins (R, G, B)
  predicting one colour bin per image, and the mutual-information estimator :class:`CrossSampleMI`.
* Their inputs are normalised with mean 0.5 and std 0.5 per channel; this project's splits hold images
  normalised with the LNL authors' constants, so ``CSADNet.f`` maps one normalisation onto the other first
  (an affine map per channel: the same input values up to float rounding).

Weights are initialised as theirs: Kaiming normal (fan-in) for every convolution and linear weight, PyTorch's
defaults for the biases. Their D_c and D_b modules also hold an unused Linear(512, 128), left out here.
"""
import torch
from torch import nn
import torch.nn.functional as F

from dataset.tensors import MEAN, STD


def kaiming(module):
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, a=0, mode='fan_in')
    return module


def mlp(widths):
    """Linear layers with a LeakyReLU between each two."""
    layers = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i:
            layers.append(nn.LeakyReLU())
        layers.append(nn.Linear(a, b))
    return nn.Sequential(*layers)


class CSADNet(nn.Module):
    """f -> D_c -> classifier; ``forward(x)`` returns ``(f(x), logits)``."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, kernel_size=5)
        self.conv2 = nn.Conv2d(64, 64, kernel_size=5)
        self.content = nn.Linear(1024, 128)
        self.classifier = mlp((128, 64, num_classes))
        # x_theirs = (x01 - 0.5) / 0.5 with x01 = x_ours * STD + MEAN
        std, mean = torch.tensor(STD), torch.tensor(MEAN)
        self.register_buffer('in_scale', (std / 0.5).view(1, 3, 1, 1), persistent=False)
        self.register_buffer('in_shift', ((mean - 0.5) / 0.5).view(1, 3, 1, 1), persistent=False)
        kaiming(self)

    def f(self, x):
        x = x * self.in_scale + self.in_shift
        # max-pooling before the ReLU: the same values and gradients as their ReLU -> max-pool
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return torch.flatten(x, 1)  # (N, 64 * 4 * 4) in (channel, row, column) order, as their view()

    def classify(self, content):
        return self.classifier(content)

    def g(self, feat):
        return self.classify(self.content(feat))

    def forward(self, x):
        feat = self.f(x)
        return feat, self.g(feat)


def masked_exp_sum(x, mask):
    """``exp(x[mask]).sum()`` without indexing by a mask, which waits for the device to count the selected
    entries: the others enter the sum as exp(-inf) = 0, with a zero gradient."""
    return torch.exp(torch.where(mask, x, torch.full_like(x, float('-inf')))).sum()


class CrossSampleMI(nn.Module):
    """Their MI estimator: two MLPs (128->128->64->64, LeakyReLU between, L2-normalised) embed the content and
    the bias features of a batch; ``forward`` returns the loss the estimator minimises (f maximises it).

    With a = content embeddings, b = bias embeddings, colour labels c (N, 3):
    A = a b^T; softmax similarity graphs S_a = softmax(tau_1 a a^T) and S_b = softmax(tau_2 b b^T) (rows),
    each symmetrised; random walk with restart P = (1 - r) (I - r S)^-1 (r = 0.5), symmetrised and
    row-normalised; A_ab = (P_a log(P_b^T + 1e-7) + P_b log(P_a^T + 1e-7)) / 2; positive pairs are those whose
    colour labels differ by a squared distance under 4 (a sample with itself included), the others negative;
    loss = log(1 + sum_pos exp(-alpha_p (A_ab + A))) / alpha_p + log(1 + sum_neg exp(alpha_n (A_ab + A))) / alpha_n.
    tau_1, tau_2 (initially tau) and alpha_p, alpha_n (initially alpha) are learned.
    """

    def __init__(self, tau=10.0, alpha=1.0, restart=0.5):
        super().__init__()
        self.content_mlp = mlp((128, 128, 64, 64))
        self.bias_mlp = mlp((128, 128, 64, 64))
        kaiming(self)
        self.tau_content = nn.Parameter(torch.tensor([float(tau)]))
        self.tau_bias = nn.Parameter(torch.tensor([float(tau)]))
        self.alpha_pos = nn.Parameter(torch.tensor([float(alpha)]))
        self.alpha_neg = nn.Parameter(torch.tensor([float(alpha)]))
        self.restart = restart

    def reset_scalars(self, tau, alpha):
        with torch.no_grad():
            self.tau_content.fill_(tau)
            self.tau_bias.fill_(tau)
            self.alpha_pos.fill_(alpha)
            self.alpha_neg.fill_(alpha)

    def propagate(self, graph):
        c = self.restart
        eye = torch.eye(len(graph), dtype=graph.dtype, device=graph.device)
        # inv_ex: the same inverse without the singularity check that waits for the device (I - c S is
        # strictly diagonally dominant for a row-stochastic S and c < 1, hence invertible)
        p = (1 - c) * torch.linalg.inv_ex(eye - c * graph)[0]
        p = (p + p.t()) / 2
        return p / p.sum(dim=1, keepdim=True)

    @staticmethod
    def similarity_graph(emb, tau):
        s = F.softmax(tau * emb.matmul(emb.t()), dim=1)
        return (s + s.t()) / 2

    def forward(self, content, bias, color_label):
        a = F.normalize(self.content_mlp(content))
        b = F.normalize(self.bias_mlp(bias))
        cross = a.matmul(b.t())
        pa = self.propagate(self.similarity_graph(a, self.tau_content))
        pb = self.propagate(self.similarity_graph(b, self.tau_bias))
        structural = (pa.matmul(torch.log(pb.t() + 1e-7)) + pb.matmul(torch.log(pa.t() + 1e-7))) / 2
        diff = color_label.unsqueeze(0) - color_label.unsqueeze(1)
        positive = diff.square().sum(dim=2) < 4
        s = structural + cross
        wp, wn = self.alpha_pos, self.alpha_neg
        return (torch.log(1 + masked_exp_sum(-wp * s, positive)) / wp
                + torch.log(1 + masked_exp_sum(wn * s, ~positive)) / wn).squeeze(0)


class CSADBias(nn.Module):
    """D_b, the three colour heads and the MI estimator; ``forward(f features)`` returns the colour logits,
    one (N, bins) tensor per channel."""

    def __init__(self, num_bins=8, tau=10.0, alpha=1.0):
        super().__init__()
        self.disentangle = nn.Linear(1024, 128)
        self.heads = nn.ModuleList(mlp((128, 64, num_bins)) for _ in range(3))
        kaiming(self.disentangle)
        kaiming(self.heads)
        self.mi = CrossSampleMI(tau, alpha)

    def predict(self, bias_feat):
        return [head(bias_feat) for head in self.heads]

    def forward(self, feat):
        return self.predict(self.disentangle(feat))

    def classifier_parameters(self):
        """D_b and the heads (the MI estimator has an optimiser of its own)."""
        return list(self.disentangle.parameters()) + list(self.heads.parameters())


class ColorHeads(nn.Module):
    """Three fresh heads on 128 features (the bias-leakage probe of CSAD's content features)."""

    def __init__(self, num_bins=8):
        super().__init__()
        self.heads = nn.ModuleList(kaiming(mlp((128, 64, num_bins))) for _ in range(3))

    def forward(self, feat):
        return [head(feat) for head in self.heads]
