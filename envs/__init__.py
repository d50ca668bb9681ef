"""Chappie envs package (see DESIGN.md): the ManagementEnv, its accounting, rewards and
the one observation encoder. Importing it registers `chappie/Management-v0`."""

from __future__ import annotations

import gymnasium as gym

ENV_ID = "chappie/Management-v0"

if ENV_ID not in gym.registry:
    gym.register(id=ENV_ID, entry_point="envs.management:ManagementEnv", disable_env_checker=True)
