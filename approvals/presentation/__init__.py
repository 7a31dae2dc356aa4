"""What a reviewer is shown: the preview computed from the real target (``previews``), diffs (``diffs``) and text
with every invisible or look-alike character made visible (``display``).

Reads (a preview reads the target with the credential's read access and audits that read). May import models,
credentials, action types, policies and the foundations; never services.
"""
