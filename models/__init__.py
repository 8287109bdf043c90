from models.losses import (accuracy, color_accuracy, color_loss, cross_entropy, neg_entropy, one_hot_cross_entropy,
                           uniform_cross_entropy)
from models.networks import ColorHead, ColorPredictor, ConvNet, GroupedLinear

__all__ = ['ConvNet', 'ColorHead', 'ColorPredictor', 'GroupedLinear', 'color_loss', 'neg_entropy', 'color_accuracy',
           'cross_entropy', 'one_hot_cross_entropy', 'uniform_cross_entropy', 'accuracy']
