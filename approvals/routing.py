from django.urls import path

from approvals.consumers import ReviewerEventsConsumer

websocket_urlpatterns = [path("ws/events/", ReviewerEventsConsumer.as_asgi())]
