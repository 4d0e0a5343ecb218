// Swagger UI for the dashboard's API, from the swagger-ui-bundle package served by the dashboard itself.
window.ui = SwaggerUIBundle({ url: "/openapi.json", dom_id: "#swagger-ui" });
