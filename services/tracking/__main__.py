import sys

from services.tracking.app import NAME, create_app
from services.tracking.handlers import SUBSCRIPTION
from services.tracking.settings import TrackingSettings
from shopkit import dlq
from shopkit.runner import serve

if sys.argv[1:2] == ["dlq"]:
    sys.exit(dlq.main([SUBSCRIPTION], sys.argv[2:]))
serve(NAME, create_app, TrackingSettings())
