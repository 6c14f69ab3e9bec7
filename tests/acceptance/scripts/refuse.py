"""Always fails, with the command in its Feedback."""


def run(command, ctx):
    return 2, f"the IPX refused: {command}"
