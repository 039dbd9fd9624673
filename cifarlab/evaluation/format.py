"""Number formatting shared by reports and tables."""


def db(value: float) -> str:
    return "inf" if value == float("inf") else f"{value:.1f} dB"


def sci(value: float) -> str:
    return f"{value:.2e}"
