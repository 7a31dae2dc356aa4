"""Side effects, dispatched once: the outbox dispatcher (``dispatcher``) delivers what services wrote in their
transaction (pushes, webhooks, Slack, e-mail) with retries, and the one contract every sender honours
(``transport.TransportError(permanent=…, retry_after=…)``).

The dispatcher may import the senders (``notify``, ``slack``) and ``services``; ``transport`` imports nothing.
"""
