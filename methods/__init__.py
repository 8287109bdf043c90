"""The methods, registered under their ``--method`` names; importing this package registers all of them.

``registry`` (the ``--method`` table, the run-defining options, the report card), ``base`` (what every method
has), ``paper`` (Baseline, Gray, LNL, BlindEye: Kim et al., CVPR 2019), ``csad`` (CSAD, Zhu et al., ICCV 2021),
``autograd`` (gradient reversal) and ``restore`` (networks rebuilt from a checkpoint).
"""
from methods.autograd import GradReverse, frozen, grad_reverse
from methods.base import Method
from methods.registry import (METHODS, RUN_DEFINING, Card, HyperParameter, build_method, display_name, get,
                              hyper_parameters, method_names, plot_color, register, registered, run_defining)
from methods.paper import LNL, Baseline, BlindEye, Gray
from methods.csad import CSAD, CSADBase, image_color_label

__all__ = ['GradReverse', 'frozen', 'grad_reverse', 'Method', 'METHODS', 'RUN_DEFINING', 'Card', 'HyperParameter',
           'build_method', 'display_name', 'get', 'hyper_parameters', 'method_names', 'plot_color', 'register',
           'registered', 'run_defining', 'LNL', 'Baseline', 'BlindEye', 'Gray', 'CSAD', 'CSADBase',
           'image_color_label']
