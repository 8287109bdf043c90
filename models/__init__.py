from models.networks import ColorHead, ColorPredictor, ConvNet, color_accuracy, color_loss, neg_entropy

__all__ = ['ConvNet', 'ColorHead', 'ColorPredictor', 'color_loss', 'neg_entropy', 'color_accuracy']
