from services.gateway.app import GatewayServer, create_app
from shared.runner import serve

serve(create_app(), "gateway", GatewayServer)
