"""The rules: who may decide and what must happen before an action runs.

- ``rules``: the policy language (conditions, rules, first match wins);
- ``store``: the rules in force, versioned, with their audit;
- ``evaluation``: the one evaluation of a proposal or an edit against rules, capabilities and the access floor;
- ``separation_of_duties``: who may see and decide an action, and which approvals count;
- ``people``: who a piece of text names (``on_behalf_of``), compared as people;
- ``edits``: what a reviewer's edited parameters must pass.

Pure rules and reads (``store`` also writes the rule set). May import models, selectors, action types and the
foundations; never services, the outbox or the senders.
"""
