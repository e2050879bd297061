"""`python -m loraclf.reference`, the command earlier docs and scripts give for docs/config.md; see config/reference.py."""

from loraclf.config.reference import markdown

if __name__ == "__main__":
    print(markdown(), end="")
