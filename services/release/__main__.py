from services.release.app import create_app
from shared.runner import serve

serve(create_app(), "release")
