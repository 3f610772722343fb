from services.catalog.app import create_app
from shared.runner import serve

serve(create_app(), "catalog")
