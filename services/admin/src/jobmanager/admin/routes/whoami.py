"""Who the caller is: the web console signs in with it and hides what the key may not do."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel

from jobmanager.admin.auth import Principal, requires
from jobmanager.admin.auth import router as auth_router
from jobmanager.admin.routes.common import API

router = auth_router(prefix=API, tags=["keys"])


class WhoAmI(BaseModel):
    name: str
    role: Literal["viewer", "operator", "admin"]


@router.get("/whoami", response_model=WhoAmI)
async def whoami(caller: Annotated[Principal, requires("viewer")]) -> WhoAmI:
    """The name and role of the key the request carries (any valid key may ask)."""
    return WhoAmI.model_validate({"name": caller.name, "role": caller.role})
