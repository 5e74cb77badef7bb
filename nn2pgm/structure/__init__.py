"""Which units of a node depend on which units of another: dependency blocks composed along
the graph (see :mod:`.patterns`)."""
