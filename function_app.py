"""The Functions app: builds the FunctionApp and registers one Blueprint per trigger family.

Nothing else happens here: the host imports this module to index the functions, so it must
not read settings, build credentials or touch the network.
"""

import azure.functions as func

from handlers import api, events, sweep, ui, verification, worker

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(api.bp)
app.register_functions(events.bp)
app.register_functions(worker.bp)
app.register_functions(sweep.bp)
app.register_functions(verification.bp)
app.register_functions(ui.bp)
