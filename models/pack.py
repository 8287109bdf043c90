"""K networks as one (``members = K``, :mod:`models.networks`) and back: member k's share of every parameter,
buffer and optimiser state tensor is the k-th of K equal blocks along dim 0. 0-d tensors (BatchNorm's batch counter,
an optimiser's step count) are one value for the whole pack; each member keeps its own offset from the others."""
import torch


def pack_tensors(tensors):
    """One packed tensor from the members' (concatenated along dim 0; a 0-d tensor: the first member's)."""
    if tensors[0].dim() == 0:
        return tensors[0].clone()
    return torch.cat(list(tensors))


def member_tensor(packed, k, members, start=None, member_start=None):
    """Member k's block of ``packed``; a 0-d tensor counts on from ``member_start`` as the pack did from ``start``."""
    if packed.dim() == 0:
        if start is None:
            return packed.clone()
        return member_start + (packed - start)
    return packed.unflatten(0, (members, -1))[k].clone()


def pack_state_dicts(states):
    """One state dict of the packed module from the members' state dicts (same keys)."""
    return {name: pack_tensors([s[name] for s in states]) for name in states[0]}


def member_state_dict(packed, k, members, starts=None):
    """Member k's state dict from the packed module's; ``starts``: (the packed 0-d values when the pack began,
    the members' state dicts then), so that member k's counters go on from its own."""
    out = {}
    for name, v in packed.items():
        if v.dim() == 0 and starts is not None:
            out[name] = member_tensor(v, k, members, starts[0][name], starts[1][k][name])
        else:
            out[name] = member_tensor(v, k, members)
    return out


def pack_optimizer_states(states, params):
    """One optimiser state dict from the members' (torch.optim state dicts of the same parameter list). A member
    whose optimiser has not stepped yet has no state: its momentum buffer packs as zeros, which gives its first
    step exactly (SGD's first step sets the buffer to the gradient, as 0.9 * 0 + gradient does)."""
    packed = {'param_groups': states[0]['param_groups'], 'state': {}}
    indices = sorted({i for s in states for i in s['state']})
    for i in indices:
        keys = sorted({key for s in states for key in s['state'].get(i, {})})
        entry = {}
        for key in keys:
            parts = []
            for s in states:
                v = s['state'].get(i, {}).get(key)
                if v is None:
                    if key != 'momentum_buffer':
                        raise ValueError(f'the runs of a pack are at different optimiser steps ({key} of one is '
                                         'missing); pack runs that start together')
                    v = torch.zeros(params[i].shape[0] // len(states), *params[i].shape[1:], dtype=params[i].dtype,
                                    device=params[i].device)
                parts.append(v)
            entry[key] = pack_tensors(parts)
        packed['state'][i] = entry
    return packed


def member_optimizer_state(packed, k, members):
    """Member k's optimiser state dict from the packed optimiser's."""
    return {'param_groups': packed['param_groups'],
            'state': {i: {key: member_tensor(v, k, members) if torch.is_tensor(v) else v for key, v in entry.items()}
                      for i, entry in packed['state'].items()}}
