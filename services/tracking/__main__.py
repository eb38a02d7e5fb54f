from services.tracking.app import NAME, create_app
from services.tracking.settings import TrackingSettings
from shopkit.runner import serve

serve(NAME, create_app, TrackingSettings())
