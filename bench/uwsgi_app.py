"""The WSGI application for uWSGI (bench/server_choice.py): uWSGI takes a module or file
that holds one, where granian and gunicorn call `service:create_app` themselves."""

from service import create_app

application = create_app()
