"""Loading a network's weights from a state dict, with a clear error for a file of another architecture."""
from utils import UserError

# Sizes a checkpoint may declare in its config: beyond them the networks would not fit a machine.
CONFIG_LIMITS = {'n_class': (1, 1000), 'feat_ch': (1, 1024), 'num_bins': (2, 256)}

def load_net_weights(net, state_dict, path, architecture='an f∘g with bn0, conv1..conv4, fc'):
    """Load ``net``'s weights (for the paper's f∘g our names are the authors' names); a clear error for another
    architecture (``architecture`` says what the file must hold)."""
    if not isinstance(state_dict, dict):
        raise UserError(f'{path}: net_state_dict is not a state dict')
    state_dict = {k.replace('module.', '', 1) if k.startswith('module.') else k: v
                  for k, v in state_dict.items()}
    own = net.state_dict()
    # PyTorch <= 0.4.0 (the authors' era) saved no num_batches_tracked counters: keep ours (0); they only
    # matter for BatchNorm with momentum=None, which this model does not use
    state_dict = dict(state_dict, **{k: own[k] for k in own if k.endswith('num_batches_tracked')
                                     and k not in state_dict})
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    if missing or unexpected:
        raise UserError(f'{path} holds another architecture: missing {missing[:4]}, unexpected '
                        f'{unexpected[:4]}; it must be {architecture}')
    wrong = [k for k, v in state_dict.items() if tuple(v.shape) != tuple(own[k].shape)]
    if wrong:
        k = wrong[0]
        raise UserError(f'{path} holds another architecture: {k} has shape {tuple(state_dict[k].shape)}, '
                        f'expected {tuple(own[k].shape)}')
    net.load_state_dict(state_dict)
