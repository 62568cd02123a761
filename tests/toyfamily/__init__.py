"""A toy sixth backbone family, added the way docs/adding_a_backbone.md describes: its
own two modules (``backbone.py``, ``converter.py``) and one ``families.register`` call
(made by ``tests/test_families.py`` instead of in ``mmssm/families.py``)."""
