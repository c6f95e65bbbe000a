"""The typed context object every command receives: options, configuration, the runtime."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import click

from raasctl.config import LoadedConfig, load_config
from raasctl.logs import set_context
from raasctl.runtime import Runtime


@dataclass
class AppContext:
    config_file: str | None = None
    env_option: str | None = None
    output_format: str = "table"
    verbosity: int = 0
    # Tests may hand in a LoadedConfig instead of a file.
    preloaded: LoadedConfig | None = field(default=None, repr=False)

    @cached_property
    def loaded(self) -> LoadedConfig:
        loaded = self.preloaded or load_config(self.config_file)
        if self.env_option is not None:
            loaded.environment(self.env_option)  # an unknown name is exit 2 everywhere
        return loaded

    @cached_property
    def runtime(self) -> Runtime:
        config = self.loaded.config
        env_name, env = self.loaded.environment(self.env_option)
        set_context(env=env_name)
        return Runtime(config, env_name, env)

    def runtime_for(self, env_name: str) -> Runtime:
        config = self.loaded.config
        name, env = config.environment(env_name)
        return Runtime(config, name, env)

    @property
    def json(self) -> bool:
        return self.output_format == "json"


pass_app = click.make_pass_decorator(AppContext, ensure=True)
