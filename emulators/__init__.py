"""Stand-ins for the services the connector talks to, speaking their real wire contracts on 127.0.0.1."""
