import sys

from services.notifications.app import NAME, create_app
from services.notifications.handlers import SUBSCRIPTION
from services.notifications.settings import NotificationsSettings
from shopkit import dlq
from shopkit.runner import serve

if sys.argv[1:2] == ["dlq"]:
    sys.exit(dlq.main([SUBSCRIPTION], sys.argv[2:]))
serve(NAME, create_app, NotificationsSettings())
