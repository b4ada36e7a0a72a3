"""The simulated Microsoft cloud the tests talk to. It ships with the product, for `itdr demo`, as
`bot.simulated.microsoft`; the tests import it under this name."""

from bot.simulated.microsoft import *  # noqa: F403
