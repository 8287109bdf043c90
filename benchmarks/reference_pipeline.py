"""The authors' training pipeline, written compactly, as the speed benchmark's reference.

Per sample, :class:`AuthorsStyleDataset` does the authors' work on every access: the uint8 image becomes a
PIL image, a nearest-neighbour resize to 14x14 gives the colour-bin target, ``ToTensor`` and ``Normalize``
give the input. :func:`reference_loader` batches it as the authors' ``DataLoader`` did (batch 128,
shuffled, worker processes). :class:`AuthorsLNLStep` is LNL's update as the authors' ``_train_step``
computes it (the baseline's step is the project's own: the same operations). The benchmark's
``Reference`` runner (:mod:`benchmarks.speed`) times these against the project's pipeline.
"""
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

import methods
from dataset.tensors import IGNORE, MEAN, STD
from models import color_loss

BATCH_SIZE = 128  # the authors' batch size (train.py's default too)
BIN_WIDTH = 32  # the authors' colour bins: value // 32
# The DataLoader default: the number of batches each worker holds ready.
PREFETCH_FACTOR = 2


class AuthorsStyleDataset(Dataset):
    """The authors' per-sample work: PIL image, 14x14 nearest resize for the colour-bin target
    (255 where the channel is 0, else value // 32), ``ToTensor`` and ``Normalize``."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.to_pil = transforms.ToPILImage()
        self.to_tensor = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        image = self.to_pil(self.images[index])
        small = np.transpose(np.asarray(image.resize((14, 14), Image.NEAREST)), (2, 0, 1))
        small = torch.from_numpy(small.astype(np.int64))
        color = torch.where(small == 0, torch.full_like(small, IGNORE), small // BIN_WIDTH)
        return self.to_tensor(image), color, int(self.labels[index])


class AuthorsLNLStep:
    """LNL's update as the authors' trainer computes it, on the networks and optimisers of a project
    :class:`methods.LNL` (``lnl``). Step 1: f, g on CE + lambda * mean(sum p log p) of each head's
    softmax, h left trainable (its weight gradients are computed, then zeroed unused); step 2: the
    whole net forward (logits unused), h through the gradient-reversal layer, all optimisers step."""

    def __init__(self, lnl):
        self.lnl = lnl

    def train(self, mode=True):
        self.lnl.train(mode)

    def update(self, images, colors, labels):
        m, opt = self.lnl, self.lnl.opt
        m.zero_grad()
        feat, logits = m.net(images)
        probs = [F.softmax(lg, dim=1) for lg in m.h(feat)]
        loss_mi = sum(torch.mean(torch.sum(p * torch.log(p), 1)) for p in probs) / len(probs)
        loss_cls = F.cross_entropy(logits, labels)
        (loss_cls + opt.lambda_ * loss_mi).backward()
        m.optimizers['net'].step()
        m.zero_grad()
        feat, _ = m.net(images)  # the authors' step 2 runs g as well; its logits go unused
        loss_color = color_loss(m.h(methods.grad_reverse(feat, opt.mu)), colors)
        loss_color.backward()
        m.optimizers['net'].step()
        m.optimizers['h'].step()
        return {'loss_cls': loss_cls.detach(), 'loss_mi': loss_mi.detach(), 'loss_color': loss_color.detach()}


def reference_loader(images, labels, num_workers, seed=0):
    extra = {'prefetch_factor': PREFETCH_FACTOR} if num_workers else {}
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(AuthorsStyleDataset(images, labels), batch_size=BATCH_SIZE, shuffle=True,
                      num_workers=num_workers, generator=generator, **extra)
