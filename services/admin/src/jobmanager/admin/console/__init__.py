"""The web console: the four tables of the original connector in the browser, at `/`.

A thin client of the admin API. The pages are Jinja2 templates holding no data (public, like
`/docs`); the browser fetches everything from `/api/v1` with the API key the operator signed
in with, kept in `sessionStorage`. Plain JavaScript modules, no build step.
"""

from jobmanager.admin.console.pages import router

__all__ = ["router"]
