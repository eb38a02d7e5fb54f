from services.notifications.app import NAME, create_app
from services.notifications.settings import NotificationsSettings
from shopkit.runner import serve

serve(NAME, create_app, NotificationsSettings())
