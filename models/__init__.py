from models.networks import (ColorHead, ColorPredictor, ConvNet, color_accuracy, color_loss, cross_entropy,
                             neg_entropy, one_hot_cross_entropy)

__all__ = ['ConvNet', 'ColorHead', 'ColorPredictor', 'color_loss', 'neg_entropy', 'color_accuracy']
