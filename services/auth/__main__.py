import sys

from services.auth.app import NAME, create_app
from services.auth.cli import main
from services.auth.settings import AuthSettings
from shopkit.runner import serve

if len(sys.argv) > 1:
    sys.exit(main(sys.argv[1:]))
serve(NAME, create_app, AuthSettings())
