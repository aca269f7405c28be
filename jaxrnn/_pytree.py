"""Pytree registration for parameter NamedTuples that carry static configuration.

Some parameter sets need a setting that is not an array (the Elman activation, the MLP activation). Such a field
must not become a leaf, or ``jax.grad`` would try to differentiate a string. ``static_fields`` registers a NamedTuple
so that the named fields travel in the tree structure (they are compared by ``tree_structure``, kept by
``jax.tree.map`` and ``jax.grad``, and hashed by ``jit``) while every other field is a child.
"""

from __future__ import annotations

import jax

__all__ = ["static_fields"]


def static_fields(*names: str):
    """Class decorator: register a NamedTuple whose ``names`` fields are static (aux data, not leaves)."""

    def register(cls):
        fields = cls._fields
        unknown = set(names) - set(fields)
        if unknown:
            raise ValueError(f"static_fields: {sorted(unknown)} are not fields of {cls.__name__} ({fields})")
        children = tuple(f for f in fields if f not in names)

        def flatten_with_keys(p):
            kids = tuple((jax.tree_util.GetAttrKey(f), getattr(p, f)) for f in children)
            return kids, tuple(getattr(p, f) for f in names)

        def flatten(p):
            return tuple(getattr(p, f) for f in children), tuple(getattr(p, f) for f in names)

        def unflatten(aux, kids):
            values = dict(zip(children, kids))
            values.update(zip(names, aux))
            return cls(**values)

        jax.tree_util.register_pytree_with_keys(cls, flatten_with_keys, unflatten, flatten_func=flatten)
        return cls

    return register
