"""A method's networks rebuilt from a checkpoint or a shipped weights file (test.py, experiments.pretrained)."""
from methods.registry import get
from models.weights import CONFIG_LIMITS, load_net_weights
from utils import UserError


def sizes(ckpt, path, method='baseline'):
    """``n_class``, ``feat_ch`` and ``num_bins`` read from the weights' shapes (by the method's class), checked
    against the checkpoint's config before any network is built (a config that asks for huge networks is
    refused, not allocated)."""
    cls = get(method)
    found = cls.weight_sizes(ckpt['net_state_dict'], ckpt.get('h_state_dict') or {})
    if found is None:
        raise UserError(f'{path} holds another architecture than {method}\'s; it must be {cls.architecture}')
    cfg = ckpt.get('config') or {}
    for key, (low, high) in CONFIG_LIMITS.items():
        if found[key] is None:
            found[key] = cfg.get(key) or 8
        if not low <= found[key] <= high:
            raise UserError(f'{path}: {key} = {found[key]} is outside {low}..{high}; not a checkpoint of this model')
        if cfg.get(key) is not None and cfg[key] != found[key]:
            raise UserError(f'{path}: its config says {key} = {cfg[key]} but its weights have {found[key]}; the '
                            'file is inconsistent')
    return found


def rebuild(ckpt, path, device, method):
    """The method's networks (f∘g, and h when the method has a trained one) from the checkpoint's own
    configuration; returns ``(net, h, config)`` with the sizes used (``n_class``, ``feat_ch``, ``num_bins``)."""
    cls = get(method)
    config = sizes(ckpt, path, method)
    net, h = cls.networks(config['n_class'], config['feat_ch'], config['num_bins'])
    load_net_weights(net, ckpt['net_state_dict'], path, cls.architecture)
    if ckpt.get('h_state_dict') is not None and cls.uses_h:
        try:
            h.load_state_dict(ckpt['h_state_dict'])
        except RuntimeError as exc:
            raise UserError(f'{path}: its h does not fit {method}\'s ({str(exc).splitlines()[0][:120]}); the file '
                            'is damaged or of another method') from None
        h.to(device).eval()
    else:
        h = None
    return net.to(device).eval(), h, config
