from services.deploy.app import create_app
from shared.runner import serve

serve(create_app(), "deploy")
